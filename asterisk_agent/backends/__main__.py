from asterisk_agent.backends.runner import main

raise SystemExit(main())
