from onwards.cli import main

raise SystemExit(main())
