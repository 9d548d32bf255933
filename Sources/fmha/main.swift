import FMHACLI

FMHACommand.main()
