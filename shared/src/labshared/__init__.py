"""labshared: the thin layer the three tools share.

Device handling (`device`), torchrun/DDP (`distributed`), run folders and atomic
checkpoints (`runs`), content-keyed caches (`cache`), shared CLI options (`cli`), the
stderr console (`console`), dataset loaders (`data`), and the offline toy world (`toy`,
`tinyclip`). Nothing method-specific lives here.
"""

__version__ = "0.1.0"
