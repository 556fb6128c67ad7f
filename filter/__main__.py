import sys

from filter.entry import main

sys.exit(main())
