"""The prepared format, read and written only here: a folder per dataset of MDS shards
(``mds``: the writer), its row map and manifest (``layout``: codec, manifest, fingerprint),
committed atomically to a local folder or S3 (``commit``)."""
