"""bytes -> ParsedMessage: one test per behaviour, on canned .eml files in tests/data."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import email.policy
import os
import pickle
from email.parser import BytesParser
from pathlib import Path

import pytest

from filter.message import (
    MAX_DEPTH,
    MAX_PARTS,
    BulkHeaders,
    ParsedMessage,
    _defuse_html,
    _parse_single_part,
    decode_bytes,
    detect_language,
    forwarded_message,
    parse_message,
    split_text,
)

DATA = Path(__file__).resolve().parents[1] / "data"
CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"


def parse(name: str, **kwargs: int) -> ParsedMessage:
    return parse_message((DATA / name).read_bytes(), **kwargs)


def test_rfc2047_subject_and_sender_name_are_decoded() -> None:
    msg = parse("rfc2047_subject.eml")
    assert msg.subject == "Réunion de résumé et café"
    assert msg.sender_name == "Renée Lefèvre"
    assert msg.sender == "renee.lefevre@example.org"


def test_to_and_cc_addresses_are_counted() -> None:
    assert parse("rfc2047_subject.eml").to_count == 3


def test_message_id_is_kept() -> None:
    assert parse("rfc2047_subject.eml").message_id == "<rfc2047-1@example.org>"


def test_html_only_mail_becomes_text_without_script_or_style() -> None:
    msg = parse("html_only.eml")
    assert msg.has_html
    assert "The pictures from the offsite are on the shared album." in msg.own_text
    assert "Café au lait" in msg.own_text
    for hidden in ("tracking", "color: red", "ignored title"):
        assert hidden not in msg.own_text


def test_html_links_come_from_hrefs() -> None:
    assert parse("html_only.eml").links == ("https://photos.example.org/offsite-2026",)


def test_html_blockquote_is_quoted_not_own() -> None:
    msg = parse("html_only.eml")
    assert "can you post the pictures" in msg.quoted_text
    assert "can you post the pictures" not in msg.own_text


def test_gmail_reply_splits_at_on_wrote_even_when_wrapped() -> None:
    msg = parse("reply_gmail_en.eml")
    assert msg.own_text == "Sounds good, Thursday at 3 works for me. I'll bring the draft.\n\nPriya"
    assert msg.quoted_text.startswith("On Wed, Mar 4, 2026")
    assert "move the planning meeting" in msg.quoted_text
    assert msg.is_reply


def test_outlook_reply_splits_at_original_message() -> None:
    msg = parse("reply_outlook.eml")
    assert "Attached are the Q3 numbers" in msg.own_text
    assert "-----Original Message-----" not in msg.own_text
    assert "could you send me the Q3 numbers" in msg.quoted_text
    assert msg.forwarded_text == ""


def test_french_reply_splits_at_a_ecrit() -> None:
    msg = parse("reply_french.eml")
    assert msg.own_text == "Avec plaisir, je réserve une table pour midi et demi.\n\nClaire"
    assert "a écrit :" in msg.quoted_text
    assert "Es-tu libre" in msg.quoted_text


def test_forwarded_message_is_kept_apart_from_own_text() -> None:
    msg = parse("forward_gmail.eml")
    assert msg.own_text == "Thought you'd find this interesting!"
    assert "Automated cranes" in msg.forwarded_text
    assert msg.quoted_text == ""
    assert msg.is_forward
    assert msg.links == ("https://harbour-weekly.example.org/2026/03/night-shift",)


def test_quoted_lines_of_a_webmail_forward_are_forwarded_text() -> None:
    msg = parse("webmail_forward.eml")
    assert msg.own_text == "Too true!"
    assert "Thou shalt end on time." in msg.forwarded_text
    assert msg.quoted_text == ""


def test_webmail_advertising_footer_is_dropped() -> None:
    msg = parse("webmail_forward.eml")
    assert "MSN Explorer" not in msg.own_text + msg.forwarded_text
    assert msg.links == ()


def test_attached_rfc822_message_is_forwarded_text() -> None:
    msg = parse("forward_rfc822.eml")
    assert msg.own_text == "See the note below, FYI."
    assert "Subject: Budget freeze until April" in msg.forwarded_text
    assert "All discretionary spending is frozen" in msg.forwarded_text


def test_attachment_is_listed_with_type_name_and_size_but_not_read() -> None:
    msg = parse("forward_rfc822.eml")
    assert [(a.content_type, a.filename) for a in msg.attachments] == [("application/pdf", "budget.pdf")]
    assert msg.attachments[0].size > 0
    assert "PDF" not in msg.own_text + msg.forwarded_text


def _uuencoded(name: str, data: bytes) -> str:
    lines = [binascii.b2a_uu(data[i : i + 45]).decode("ascii") for i in range(0, len(data), 45)]
    return f"begin 644 {name}\n" + "".join(lines) + "`\nend\n"


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_uuencoded_file_in_the_text_is_an_attachment_not_text(newline: str) -> None:
    block = _uuencoded("resume.doc", os.urandom(400))
    body = "Here is my resume, could you pass it on?\n\n" + block + "\nThanks, Pat\n"
    raw = ("From: pat@example.com\nSubject: resume\n\n" + body).replace("\n", newline).encode("ascii")
    msg = parse_message(raw)
    assert " ".join(msg.own_text.split()) == "Here is my resume, could you pass it on? Thanks, Pat"
    assert [(a.content_type, a.filename) for a in msg.attachments] == [("application/octet-stream", "resume.doc")]
    assert msg.attachments[0].size >= len(block.rstrip())


def test_uuencoded_file_cut_short_is_taken_to_the_end() -> None:
    block = _uuencoded("notes.txt", os.urandom(900))
    raw = ("From: a@example.com\nSubject: s\n\nTwo files.\n" + block[:300]).encode("ascii")
    msg = parse_message(raw)
    assert msg.own_text == "Two files."
    assert [a.filename for a in msg.attachments] == ["notes.txt"]


def test_a_line_starting_with_begin_in_prose_is_text() -> None:
    raw = b"From: a@example.com\nSubject: s\n\nbegin 644 of the plan is done.\nWe start Monday.\nend of note\n"
    msg = parse_message(raw)
    assert "begin 644 of the plan" in msg.own_text and "We start Monday." in msg.own_text
    assert msg.attachments == ()


def test_french_outlook_forward_with_de_envoye_is_forwarded() -> None:
    msg = parse("outlook_french_forward.eml")
    assert msg.own_text == "Pour info."
    assert msg.forwarded_text.startswith("De : Direction")
    assert "Le bâtiment B sera fermé vendredi" in msg.forwarded_text


def test_embedded_message_can_be_read_as_if_sent_directly() -> None:
    inner = forwarded_message(parse("reply_outlook.eml"))
    assert inner is not None
    assert inner.subject == "Q3 numbers"
    assert inner.own_text == "Luis, could you send me the Q3 numbers before tomorrow's review?"


def test_unknown_charsets_do_not_raise_and_fall_back_to_readable_text() -> None:
    msg = parse("unknown_charset.eml")
    assert msg.error == ""
    assert "Café crème, déjà vu." in msg.own_text
    assert "naïve résumé" in msg.own_text
    assert msg.sender_name == "José"
    assert msg.defects > 0


def test_broken_base64_keeps_the_decodable_part() -> None:
    assert "Hello world" in parse("unknown_charset.eml").own_text


def test_decode_bytes_prefers_utf8_when_most_of_it_is_valid() -> None:
    text, ok = decode_bytes("naïve résumé à Paris, déjà".encode() + b"\xff", "utf-8")
    assert text.startswith("naïve résumé à Paris, déjà")
    assert not ok


def test_quoted_printable_leftovers_in_7bit_bodies_are_cleaned() -> None:
    msg = parse("enron_qp_leftovers.eml")
    assert "=20" not in msg.own_text
    assert "will\nfollow up with him again." in msg.own_text


def test_bulk_headers_are_reported() -> None:
    msg = parse("newsletter_en.eml")
    assert msg.bulk.is_bulk
    assert msg.bulk.list_id == "The Logistics Digest <digest.news.example.com>"
    assert msg.bulk.precedence == "bulk"
    assert not parse("favour_request_fr.eml").bulk.is_bulk


def test_links_are_deduplicated() -> None:
    links = parse("newsletter_en.eml").links
    assert len(links) == len(set(links)) == 6


def test_empty_bytes_give_a_valid_message_with_error() -> None:
    msg = parse_message(b"")
    assert msg.error == "empty message"
    assert msg.own_text == msg.subject == ""


def test_binary_junk_gives_a_valid_message_with_error() -> None:
    msg = parse_message(os.urandom(2048) + b"\x00\x01\x02" * 100)
    assert msg.error.startswith("binary data")
    assert msg.links == () and msg.attachments == ()


def test_text_without_headers_is_read_and_counted_as_defective() -> None:
    msg = parse_message(b"just some words, no header at all\n")
    assert msg.error == ""
    assert "just some words" in msg.own_text
    assert msg.defects > 0


def test_deeply_nested_multipart_stops_at_the_depth_cap() -> None:
    levels = 1000
    head = b"From: a@example.org\r\nSubject: nest\r\nMIME-Version: 1.0\r\n"
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(levels)
    )
    closing = b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(levels)))
    msg = parse_message(head + opening + b"Content-Type: text/plain\r\n\r\ndeep text" + closing)
    assert msg.error == ""
    assert "depth" in msg.limits_hit
    assert msg.part_count <= MAX_DEPTH + 1


def test_many_parts_stop_at_the_part_cap() -> None:
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i for i in range(MAX_PARTS * 3))
    data = b'From: a@example.org\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n' + parts + b"--b--\r\n"
    msg = parse_message(data)
    assert "parts" in msg.limits_hit
    assert msg.part_count == MAX_PARTS


def test_large_base64_attachment_is_not_decoded() -> None:
    blob = base64.encodebytes(os.urandom(5 * 1024 * 1024))
    data = (
        b"From: a@example.org\r\nSubject: big\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="X"\r\n\r\n'
        b"--X\r\nContent-Type: text/plain\r\n\r\nthe report is attached\r\n"
        b"--X\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="data.bin"\r\n\r\n' + blob + b"\r\n--X--\r\n"
    )
    msg = parse_message(data)
    assert msg.own_text == "the report is attached"
    assert msg.attachments[0].filename == "data.bin"
    assert msg.attachments[0].size >= 5 * 1024 * 1024
    assert msg.part_count == 3


def test_decoded_text_is_capped() -> None:
    body = b"word " * 50000
    msg = parse_message(b"From: a@example.org\r\nSubject: long\r\n\r\n" + body, max_text_chars=1000)
    assert len(msg.own_text) <= 1000
    assert "text" in msg.limits_hit


def test_huge_header_is_capped() -> None:
    msg = parse_message(b"From: a@example.org\r\nSubject: " + b"x" * 100000 + b"\r\n\r\nbody\r\n")
    assert len(msg.subject) <= 4096
    assert "header" in msg.limits_hit


def test_huge_content_type_parameters_are_cut_before_parsing() -> None:
    params = b"; ".join(b'p%d="a;b;c"' % i for i in range(20000))
    msg = parse_message(b"From: a@example.org\r\nContent-Type: text/plain; " + params + b"\r\n\r\nbody text\r\n")
    assert "header" in msg.limits_hit
    assert msg.error == ""


def test_language_is_detected_as_english_or_french() -> None:
    assert detect_language("Could you please send me the report? Thanks for your help with this.") == "en"
    assert detect_language("Bonjour, pourriez-vous me transmettre le rapport ? Merci pour votre aide.") == "fr"
    assert detect_language("12345 ---") == "unknown"
    assert parse("favour_request_fr.eml").language == "fr"
    assert parse("newsletter_en.eml").language == "en"


def test_short_informal_mail_gets_a_language() -> None:
    assert detect_language("Salut, regarde ça") == "fr"
    assert detect_language("Ma chérie, regarde comme c'est beau") == "fr"  # elided forms count for French
    assert detect_language("c\u2019est top, regarde l\u2019article") == "fr"  # with a phone's apostrophe too
    assert detect_language("hi, see this") == "en"
    assert detect_language("Thanks") == "unknown"  # one word says too little


def test_other_languages_are_not_taken_for_french() -> None:
    # Spanish shares "de" and "la" with French, but its own common words outnumber them; German too
    assert detect_language("Hola, muchas gracias por el correo de la semana, es muy bueno para los dos") == "unknown"
    assert detect_language("Wir haben uns lange nicht gesehen, und ich denke an die Zeit mit dir") == "unknown"
    assert detect_language("Ciao, ti mando il link per la mostra di domani, che ne dici? Un bacio") == "unknown"
    assert detect_language("Olá, você viu o artigo que te mandei? É muito bom, um abraço") == "unknown"
    assert detect_language("Per our call: see the El Paso and Los Angeles numbers for Las Vegas") == "en"


def test_names_are_not_taken_for_french_elisions() -> None:
    # "D'Amato" is a name, not an elision; "l'article" is one, also at the start of a sentence or in capitals
    assert detect_language("Meeting at noon with D'Amato and D'Souza, call me") == "en"
    assert detect_language("L'article est là") == "fr"
    assert detect_language("MERCI! J'AI REÇU L'INVITATION, C'EST PARFAIT") == "fr"
    assert detect_language("RE: C'EST L'HEURE DU DÉJEUNER") == "fr"


def _plain(body: str, subject: str = "Hello", extra: str = "") -> bytes:
    head = f"From: a@example.org\r\nSubject: {subject}\r\n{extra}Content-Type: text/plain; charset=utf-8\r\n\r\n"
    return (head + body).encode()


def test_html_sent_as_plain_text_is_read_without_its_tags() -> None:
    body = (
        '<P>&nbsp;<BR><FONT SIZE=2>Read this one,</FONT><BR><B>it is <a href="https://n.example/x">good</a></B></P>\r\n'
    )
    msg = parse_message(_plain(body))
    assert msg.own_text == "Read this one,\nit is good"
    assert msg.has_html
    assert msg.links == ("https://n.example/x",)


def test_markup_sent_as_plain_text_hides_none_of_its_words() -> None:
    # a plain-text reader shows everything: nothing after <style> or in a comment may escape the filter
    body = "<b>Hi Ann</b><br><br><style>\r\nCould you pass my CV to your HR team?\r\n<!-- and a word -->\r\n"
    msg = parse_message(_plain(body))
    assert "Could you pass my CV to your HR team?" in msg.own_text and "and a word" in msg.own_text


def test_markup_sent_as_plain_text_keeps_its_lines_and_quotes() -> None:
    body = "<b>URGENT</b> <i>please</i> <b>read</b>\r\n\r\nCan you send me the file?\r\n\r\n"
    body += "-----Original Message-----\r\nFrom: Bob\r\nSent: Monday\r\nSubject: file\r\n\r\nHere it is.\r\n"
    msg = parse_message(_plain(body, subject="Re: file"))
    assert msg.own_text == "URGENT please read\n\nCan you send me the file?"
    assert "Here it is." in msg.quoted_text


def test_plain_text_about_tags_or_with_addresses_stays_plain() -> None:
    body = "Use <br> for a line break and <p> for a paragraph, not <div>.\r\n"
    msg = parse_message(_plain(body))
    assert "<br>" in msg.own_text
    assert not msg.has_html
    addresses = "<a.smith@example.com>\r\n<b.jones@example.com>\r\n<i.lee@example.com>\r\nPlease add them.\r\n"
    assert parse_message(_plain(addresses)).own_text.startswith("<a.smith@example.com>")


def test_word_markup_sent_as_plain_text_is_read_without_its_tags() -> None:
    # Word's prefixed tags, conditional sections and namespace line, and breaks at <hr> and comments
    body = (
        '<p class=MsoNormal><span>Prices<?xml:namespace prefix = o ns = "urn:schemas-microsoft-com:office:office" />'
        "<o:p></o:p></span></p>\r\n<p><![if !supportLists]>1.<![endif]><st1:place>Houston</st1:place> today</p>"
        "<hr>Sign up<!-- a note -->next line<div " + "x" * 1500 + ">Bye</div>\r\n"
    )
    msg = parse_message(_plain(body))
    assert msg.own_text.split("\n") == ["Prices", "", "1.Houston today", "", "Sign up", " a note", "next line", "Bye"]


def test_a_list_tag_or_a_count_before_re_makes_a_reply() -> None:
    for subject in ("[team] Re: numbers", "Re[2]: numbers", "AW: numbers", "[a] [b] RE: Re: numbers"):
        assert parse_message(_plain("Fine.", subject=subject)).is_reply, subject
    assert not parse_message(_plain("Fine.", subject="[team] Regarding numbers")).is_reply


def test_markup_sent_as_plain_text_is_read_from_the_html_allowance() -> None:
    # parts of bare markup strip to nothing: they must still use up what reading markup may cost
    part = "Content-Type: text/plain\r\n\r\n" + "<p></p>" * 20_000 + "\r\n"
    data = "From: a@example.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    data += "".join(f"--b\r\n{part}" for _ in range(60)) + "--b--\r\n"
    msg = parse_message(data.encode(), max_text_chars=100_000)
    assert "text" in msg.limits_hit


def test_markup_sent_as_plain_text_stays_beside_a_list_footer() -> None:
    data = (
        "From: a@example.org\r\nSubject: look\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        "Content-Type: text/plain\r\n\r\n<html><body><p>Have a look at this article.</p><p>Ann</p></body></html>\r\n"
        "--b\r\nContent-Type: text/plain\r\n\r\n____\r\nFriends mailing list\r\nFriends@lists.example.org\r\n--b--\r\n"
    )
    assert "Have a look at this article." in parse_message(data.encode()).own_text


def test_a_quoted_message_with_nothing_above_it_is_forwarded_unless_a_reply() -> None:
    body = "-----Original Message-----\r\nFrom: Jo\r\nSent: Monday\r\nSubject: funny\r\n\r\nThe whole story.\r\n"
    passed_on = parse_message(_plain(body, subject="Funny"))
    assert passed_on.own_text == passed_on.quoted_text == ""
    assert "The whole story." in passed_on.forwarded_text
    for subject, extra in [
        ("Re: Funny", ""),
        ("[friends] Re: Funny", ""),
        ("Re[2]: Funny", ""),
        ("Funny", "In-Reply-To: <1@example.org>\r\n"),
        ("Funny", "References: <1@example.org>\r\n"),
    ]:
        reply = parse_message(_plain(body, subject=subject, extra=extra))
        assert "The whole story." in reply.quoted_text and reply.forwarded_text == "", subject
    # "On ... wrote:" is a reply's quote, with the answer perhaps written below it, even over quoted headers
    bottom = "On Mon, Jo wrote:\r\n> Can you come to lunch?\r\n\r\nYes, I will be there.\r\n"
    assert parse_message(_plain(bottom, subject="Lunch")).forwarded_text == ""
    over_headers = (
        "On Mon, Jo wrote:\r\n> ---------- Forwarded message ----------\r\n> Subject: lunch\r\n> Noon?\r\n\r\nYes.\r\n"
    )
    assert parse_message(_plain(over_headers, subject="Lunch")).forwarded_text == ""


def test_cpython_email_fixtures_all_parse() -> None:
    fixtures = CORPUS / "python-test-email"
    if not fixtures.is_dir():
        pytest.skip(f"corpus not found at {fixtures} (../shared/corpus from the repository root)")
    files = sorted(fixtures.glob("msg_*.txt"))
    assert files
    for file in files:
        msg = parse_message(file.read_bytes())
        assert isinstance(msg, ParsedMessage), file.name
        assert msg.error == "", file.name


# The single-part reader: it must build exactly the message the stdlib parser builds, or step aside.

SINGLE_PART = {
    "folded_lines": b"From: a@example.org\nSubject: a long subject\n  that goes on\n\tand on\nTo: b@x.org\n\nbody\n",
    "duplicate_fields": b"Subject: first\nSubject: second\nX-A: 1\nx-a: 2\n\nbody\n",
    "crlf_line_ends": b"From: a@example.org\r\nSubject: hi\r\n there\r\n\r\nline one\r\nline two\r\n",
    "cr_line_ends": b"From: a@example.org\rSubject: hi\r\rline one\rline two\r",
    "mixed_line_ends": b"From: a@example.org\r\nSubject: hi\n\r\nbody\r\n",
    "missing_blank_line": b"From: a@example.org\nSubject: hi\nthe body starts here\n",
    "mbox_envelope_line": b"From a@example.org Mon Jan  1 00:00:00 2001\nSubject: hi\n\nbody\n",
    "eight_bit_header": b"From: Jos\xe9 <j@example.org>\nSubject: caf\xc3\xa9\n\nbody \xe9\n",
    "blank_values": b"Subject:\nX-Empty:   \r\nX-Folded:\n continued\n\nbody\n",
    "no_body": b"From: a@example.org\nSubject: hi",
    "no_header": b"just words\nand more\n",
    "text_html": b"Content-Type: text/html; charset=utf-8\n\n<p>hi</p>\n",
    "bad_content_type": b"Content-Type: multipart\nSubject: x\n\nbody\n",
    "qp_body": b"Content-Type: text/plain; charset=latin-1\nContent-Transfer-Encoding: quoted-printable\n\nd=E9j=E0\n",
    "two_slashes_in_content_type": b"Content-Type: multipart/mixed/x; boundary=b\n\n--b\n\nhi\n--b--\n",
    "first_content_type_wins": b"Content-Type: text/plain\nContent-Type: multipart/mixed; boundary=b\n\n--b\nhi\n",
}


@pytest.mark.parametrize("data", SINGLE_PART.values(), ids=SINGLE_PART.keys())
def test_single_part_reader_builds_what_the_stdlib_parser_builds(data: bytes) -> None:
    fast = _parse_single_part(data)
    full = BytesParser(policy=email.policy.compat32).parsebytes(data)
    assert fast is not None
    assert list(fast.raw_items()) == list(full.raw_items())
    assert fast.get_payload() == full.get_payload()
    assert [type(d) for d in fast.defects] == [type(d) for d in full.defects]


LEFT_TO_STDLIB = {
    "multipart": b'Content-Type: multipart/mixed; boundary="b"\n\n--b\n\nhi\n--b--\n',
    "attached_message": b"Content-Type: message/rfc822\n\nSubject: inner\n\ninner body\n",
    "misplaced_from_line": b"Subject: hi\nFrom a@example.org Mon Jan  1 00:00:00 2001\nTo: b@example.org\n\nbody\n",
    "first_line_folded": b" folded\nSubject: hi\n\nbody\n",
    "nameless_field": b"Subject: hi\n: no name\n\nbody\n",
    "upper_case_multipart": b'Content-Type:  MULTIPART/Mixed ; boundary="b"\n\n--b\n\nhi\n--b--\n',
    "eight_bit_content_type": b'Content-Type: multipart/mixed; name="caf\xe9"; boundary="b"\n\n--b\n\nhi\n--b--\n',
}


@pytest.mark.parametrize("data", LEFT_TO_STDLIB.values(), ids=LEFT_TO_STDLIB.keys())
def test_multipart_and_unusual_headers_are_left_to_the_stdlib_parser(data: bytes) -> None:
    assert _parse_single_part(data) is None
    assert parse_message(data).error == ""


@pytest.mark.parametrize("name", ["rfc2047_subject.eml", "html_only.eml", "forward_rfc822.eml"])
def test_parsed_message_is_the_object_its_constructor_builds(name: str) -> None:
    msg = parse(name)
    assert list(vars(msg)) == [f.name for f in dataclasses.fields(ParsedMessage)]
    assert list(vars(msg.bulk)) == [f.name for f in dataclasses.fields(BulkHeaders)]
    assert msg == ParsedMessage(**vars(msg))
    assert hash(msg) == hash(ParsedMessage(**vars(msg)))
    assert pickle.loads(pickle.dumps(msg)) == msg


def test_text_without_any_marker_is_all_own_text() -> None:
    assert split_text("Hi Ann,\r\nthe plan is fine.\r\n\r\nBob\r\n") == ("Hi Ann,\nthe plan is fine.\n\nBob\n", "", "")


def test_a_line_with_several_dates_is_kept_once() -> None:
    text = "Moved from 1/2/2001 to 3/4/2001 and 5/6/2001.\n> old line\nThanks."
    assert split_text(text) == ("Moved from 1/2/2001 to 3/4/2001 and 5/6/2001.\nThanks.", "> old line", "")


def test_folded_subject_is_unfolded_and_the_first_of_duplicate_fields_wins() -> None:
    msg = parse_message(
        b"Subject: Lunch on\n  Thursday?\nSubject: ignored\nFrom: Ana <ana@example.org>\n\nSee you there.\n"
    )
    assert msg.subject == "Lunch on Thursday?"
    assert msg.sender == "ana@example.org"


def test_crlf_and_lf_line_ends_give_the_same_message() -> None:
    lf = b"From: a@example.org\nSubject: Report\n\nHere is the report.\n\nOn Mon, Bob wrote:\n> send it\n"
    assert parse_message(lf.replace(b"\n", b"\r\n")) == parse_message(lf)


def test_missing_blank_line_keeps_the_body_and_counts_a_defect() -> None:
    msg = parse_message(b"From: a@example.org\nSubject: hi\nthe body starts here\n")
    assert msg.own_text == "the body starts here"
    assert msg.defects == 1


def test_quoted_printable_single_part_is_decoded_in_its_charset() -> None:
    msg = parse_message(
        b"Subject: =?iso-8859-1?q?D=E9j=E0?=\nContent-Type: text/plain; charset=iso-8859-1\n"
        b"Content-Transfer-Encoding: quoted-printable\n\nLe caf=E9 est pr=EAt, =\nvenez vite.\n"
    )
    assert msg.subject == "Déjà"
    assert msg.own_text == "Le café est prêt, venez vite."
    assert msg.defects == 0


def test_base64_single_part_is_decoded() -> None:
    body = base64.encodebytes("Merci pour votre aide, à bientôt.".encode())
    msg = parse_message(
        b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n" + body, max_text_chars=100
    )
    assert msg.own_text == "Merci pour votre aide, à bientôt."


def test_undeclared_eight_bit_header_and_body_are_read() -> None:
    msg = parse_message(b"From: Jos\xc3\xa9 <j@example.org>\nSubject: caf\xe9\n\nd\xe9j\xe0 vu\n")
    assert msg.sender_name == "José"
    assert msg.subject == "café"
    assert msg.own_text == "déjà vu"


def test_blanks_and_tabs_in_a_header_collapse_to_one_space() -> None:
    assert parse_message(b"Subject: a \t  b\t\tc\n\nbody\n").subject == "a b c"


def test_links_are_found_whatever_the_case_of_the_scheme() -> None:
    msg = parse_message(b"Subject: x\n\nSee HTTP://EXAMPLE.ORG/a and Https://example.org/b.\n")
    assert msg.links == ("HTTP://EXAMPLE.ORG/a", "Https://example.org/b")


def test_notes_date_line_opens_a_quote_only_near_the_start_of_the_line() -> None:
    near = "Thanks.\nBob Smith <bob@example.org> on 01/02/2001 10:00 AM\nTo: Ann\nSubject: plan\n\nold text"
    far = "Thanks.\n" + "x" * 121 + " 01/02/2001 10:00\nTo: Ann\nSubject: plan\n\nold text"
    assert split_text(near)[0] == "Thanks."
    assert split_text(far)[1] == ""


def test_advertising_footer_below_a_line_of_underscores_is_dropped() -> None:
    text = "See you at six.\n\n__________________\nDo You Yahoo!?\nGet email at http://mail.example.com\n\nAnn"
    assert split_text(text)[0] == "See you at six.\n\n\nAnn"


# Input crafted to slip past the filter or to stall it ---------------------------------

ASK = (
    b"From: Mark <mark@example.com>\nTo: paul@example.org\nSubject: quick favour\n\n"
    b"Hi Paul,\n\nCould you introduce me to your colleague at the bank?\n\nThanks,\nMark\n"
)


def test_a_nul_after_a_header_does_not_make_a_message_binary() -> None:
    msg = parse_message(ASK.replace(b"Hi Paul,", b"Hi Paul,\x00"))
    assert msg.error == ""
    assert "introduce me" in msg.own_text and "\x00" not in msg.own_text


@pytest.mark.parametrize("lead", [b"\xef\xbb\xbf", b"\n", b"\r\n\r\n", b"\xef\xbb\xbf\n"])
def test_a_byte_order_mark_or_blank_lines_before_the_header_are_dropped(lead: bytes) -> None:
    msg = parse_message(lead + ASK)
    assert (msg.subject, msg.sender) == ("quick favour", "mark@example.com")
    assert "introduce me" in msg.own_text
    assert msg.defects >= 1


@pytest.mark.parametrize(
    "data",
    [
        b"Subject: =?utf-7?Q?service_+2D0-?=\n\nBonjour Paul, pourriez-vous me presenter a votre collegue ?\n",
        b"Subject: x\nContent-Type: text/plain; charset=utf-7\n\nMerci +2D0- pour votre aide.\n",
        b"Subject: x\nContent-Type: text/plain; charset=unicode_escape\n\nMerci \\udce9 pour votre aide.\n",
    ],
)
def test_charsets_that_spell_lone_surrogates_give_text_every_encoder_takes(data: bytes) -> None:
    msg = parse_message(b"From: a@example.com\n" + data)
    for text in (msg.subject, msg.own_text):
        text.encode("utf-8")
        text.encode("utf-32-le")


def test_python_only_codecs_are_not_charsets() -> None:
    assert decode_bytes(b"pr\\u00e9", "unicode_escape") == ("pr\\u00e9", False)


@pytest.mark.parametrize("keyword", [b"boundary=", b"bOundary=", b"boundary*0=", b"BOUNDARY*="])
def test_the_nesting_cut_reads_every_spelling_of_boundary(keyword: bytes) -> None:
    head = (
        b"From: a@example.com\nSubject: hi\nContent-Type: multipart/mixed; boundary=top\n\n--top\n"
        b"Content-Type: text/plain\n\nCould you please introduce me to your friend at the bank?\n--top\n"
    )
    nested = b"".join(b"Content-Type: multipart/mixed; " + keyword + b"b%d\n\n--b%d\n" % (i, i) for i in range(3000))
    msg = parse_message(head + nested + b"\nx\n--top--\n")
    assert "depth" in msg.limits_hit
    assert "introduce me" in msg.own_text


def test_a_flood_of_empty_parts_is_cut_before_the_parser_builds_them() -> None:
    data = b"From: a@example.com\nSubject: hi\nContent-Type: multipart/mixed; boundary=z\n\n--z\n\nhello friend\n"
    msg = parse_message(data + b"--z\n\n" * 200_000)
    assert "parts" in msg.limits_hit
    assert msg.part_count <= MAX_PARTS + 1
    assert "hello friend" in msg.own_text


@pytest.mark.parametrize(
    "html, shown",
    [
        ('<a "' * 3, '&lt;a "' * 3),
        ('<a b=">"' * 2, '&lt;a b=">"' * 2),
        ("<p>x</p><!-- open", "<p>x</p>&lt;!-- open"),
        ('<img src="x.gif"">', '<img src="x.gif"">'),
        ('<hr size=1 width="80% noshade align="left">', '<hr size=1 width="80% noshade align="left">'),
        ('<a href="https://x.example/a>b">', '<a href="https://x.example/a>b">'),
        ('<a title="a<b">', '&lt;a title="a<b">'),  # a "<" in a quoted value: read as text
        ("<!--[if mso]><p>x</p><![endif]-->", "<!--[if mso]><p>x</p><![endif]-->"),
        # marked sections with no end of their kind after them (html.parser would look for one from each)
        ("<p><![CDATA[x><![CDATA[y>]>", "<p>&lt;![CDATA[x>&lt;![CDATA[y>]>"),
        ("<p><![CDATA[x>]]><![if y]\f>z", "<p><![CDATA[x>]]><![if y]\f>z"),
        ("<p><![if x]>a<![endif]", "<p><![if x]>a&lt;![endif]"),
    ],
)
def test_html_tags_that_never_close_become_text_and_others_stay(html: str, shown: str) -> None:
    assert _defuse_html(html) == shown


@pytest.mark.parametrize("unit", ['<a "', "<a x='", '<a b=">"', '<!--<a "', "<!--", "'<'=", '"<"='])
def test_html_made_of_tags_that_never_close_is_read_as_text(unit: str) -> None:
    msg = parse_message(b"From: a@example.com\nSubject: hi\nContent-Type: text/html\n\n" + unit.encode() * 30_000)
    assert msg.error == ""
    assert "text" in msg.limits_hit  # read up to the text cap, not stopped by the markup


def test_lines_starting_with_two_dashes_in_a_plain_body_are_not_parts() -> None:
    body = b"Agenda:\n" + b"\n".join(b"-- item %d" % i for i in range(MAX_PARTS * 5))
    msg = parse_message(b"From: b@example.org\nSubject: agenda\n\n" + body + b"\n\nCan you introduce me?\n")
    assert "parts" not in msg.limits_hit
    assert "introduce me" in msg.own_text
