from rtmon.cli import main

raise SystemExit(main())
