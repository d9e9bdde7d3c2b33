"""`python -m resnet_bench.sweep`: the sweep stage."""

from resnet_bench.sweep.driver import main

if __name__ == "__main__":
    raise SystemExit(main())
