from fastpool.cli import main

raise SystemExit(main())
