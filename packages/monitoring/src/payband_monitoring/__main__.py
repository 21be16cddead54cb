from payband_monitoring.cli import main

main()
