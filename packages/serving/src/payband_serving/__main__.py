from payband_serving.cli import main

if __name__ == "__main__":
    main()
