"""Dataset loaders, one module per family.

- `composed_retrieval`: FashionIQ, CIRR, CIRCO, GeneCIS (+ the toy CIR world)
- `group_shift`: Waterbirds, CelebA, SpuCoAnimals (+ the toy spurious world)
- `image_classification`: CIFAR-10, ImageNet-100, MNIST-5k
- `text_triplets`: (reference, modification, target) caption triplets

Every loader reads the benchmark's official on-disk layout and raises
`labshared.errors.DataLayoutError` naming the path, what is missing and the expected tree.
"""

from labshared.errors import DataLayoutError

__all__ = ["DataLayoutError"]
