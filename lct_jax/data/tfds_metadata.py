"""tfds metadata beside our latent shards, so tfds users can read an encoded dataset as it is.

`tfds.builder_from_directory(latent_dir)` then reads the shards as a tfds
TFRecord dataset (split 'train', features latent / shape / index, the same
`tf.train.Example`s our pipeline reads); nothing is copied. Written with tfds'
own `DatasetInfo` (no TensorFlow needed to write it; reading through tf.data
needs TensorFlow, as for any TFRecord dataset).
"""
from __future__ import annotations

import os

import numpy as np

DATASET_NAME = 'lct_latents'
# Our shard names, `shard-00000-of-00016.tfrecord`, as a tfds file-name template.
FILENAME_TEMPLATE = 'shard-{SHARD_X_OF_Y}.{FILEFORMAT}'


def write_tfds_metadata(latent_dir: str, manifest: dict, shard_lengths) -> None:
    """dataset_info.json and features.json for the shards listed in `manifest`."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core import naming
    template = naming.ShardedFileTemplate(data_dir=latent_dir, template=FILENAME_TEMPLATE,
                                          dataset_name=DATASET_NAME, split='train', filetype_suffix='tfrecord')
    features = tfds.features.FeaturesDict({
        # Raw float32 bytes, as tfrecord.encode_latent writes them (tfds' 'bytes' tensor encoding).
        'latent': tfds.features.Tensor(shape=tuple(manifest['shape']), dtype=np.float32, encoding='bytes'),
        'shape': tfds.features.Tensor(shape=(3,), dtype=np.int64),
        'index': tfds.features.Scalar(dtype=np.int64, doc='the example\'s index in the source dataset'),
        **({'label': tfds.features.ClassLabel(names=list(manifest['classes']))}
           if manifest.get('num_classes') else {}),
    })
    num_bytes = sum(os.path.getsize(os.path.join(latent_dir, s)) for s in manifest['shards'])
    split = tfds.core.SplitInfo(name='train', shard_lengths=[int(n) for n in shard_lengths],
                                num_bytes=num_bytes, filename_template=template)
    identity = tfds.core.DatasetIdentity(name=DATASET_NAME, version=tfds.core.Version('1.0.0'),
                                         data_dir=latent_dir, module_name='')
    info = tfds.core.DatasetInfo(
        builder=identity, features=features,
        description=(f'Latents of {manifest["source"]} encoded by {manifest["autoencoder"]} '
                     f'(multiplied by scale_factor {manifest["scale_factor"]}; manifest.json has the rest).'))
    info.set_file_format('tfrecord')
    info.set_splits(tfds.core.SplitDict([split]))
    info.write_to_directory(latent_dir)
