from facesurv.cli import main

raise SystemExit(main())
