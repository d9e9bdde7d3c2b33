"""`python -m resnet_bench.report`: the report stage's entry point."""

from resnet_bench.report import main

if __name__ == "__main__":
    raise SystemExit(main())
