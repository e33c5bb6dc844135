"""The commit protocol: the only code that makes a checkpoint visible or claims an epoch.

One strategy per backend capability (DESIGN section 3.1), chosen from the backend's capabilities,
never from its type:

* :mod:`~ckptstore.commit.rename`: backends with an atomic directory rename (local disk, NFS) stage
  in ``work/``, fsync every file and the manifest, and rename the folder onto ``epochs/NNN``;
* :mod:`~ckptstore.commit.record`: object stores claim ``epochs/NNN/`` (:mod:`~ckptstore.commit.claims`),
  upload, and commit by writing ``MANIFEST.json`` create-only.

Both have the shape of :class:`~ckptstore.commit._common.Publisher`: ``seal`` makes every file durable
and builds the manifest, ``publish`` is the commit point. Nothing here moves a pointer or touches the
index: that comes after the commit, in the store.

This package's ``__init__`` imports nothing, so the transaction can hold a claim without tying itself
to the strategies that publish it.
"""
