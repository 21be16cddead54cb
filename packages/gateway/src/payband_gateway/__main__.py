from payband_gateway.cli import main

main()
