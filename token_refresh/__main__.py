from token_refresh.cli import main

raise SystemExit(main())
