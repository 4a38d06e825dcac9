from counter_service.cli import main

main()
