from asterisk_agent.cli import main

raise SystemExit(main())
