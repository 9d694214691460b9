from agent_mesh.cli import main

raise SystemExit(main())
