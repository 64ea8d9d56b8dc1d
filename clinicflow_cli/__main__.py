from clinicflow_cli.main import main

main()
