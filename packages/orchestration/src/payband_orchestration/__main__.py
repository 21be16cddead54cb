from payband_orchestration.cli import main

if __name__ == "__main__":
    main()
