"""One reader per raw format. Array formats (`digits`, `cifar`, `mnist`) return whole arrays;
`imagenet_downsampled` streams its batches into the artifact; image formats (`imagefolder`,
`imagenet`, `tinyimagenet`) return an `ImageIndex` and a member stream for
`resnet_bench.data.images.write_images`. This module imports nothing."""
