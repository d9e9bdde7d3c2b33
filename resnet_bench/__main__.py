"""`python -m resnet_bench` is `resnet-bench`."""

from resnet_bench.cli import main

raise SystemExit(main())
