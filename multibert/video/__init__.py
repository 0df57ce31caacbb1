"""Video → visual words for VideoBERT (Sun et al., "VideoBERT: A Joint Model for Video and Language Representation
Learning", ICCV 2019, arXiv 1904.01766).

- :mod:`~multibert.video.adapter`: text + visual words in one vocabulary, the VideoBERT adapter;
- :mod:`~multibert.video.decode`: PyAV streaming decode into fixed-rate, non-overlapping clips;
- :mod:`~multibert.video.features`: clip feature extractors (S3D, R3D-18, a light CPU descriptor);
- :mod:`~multibert.video.quantize`: hierarchical k-means visual words (CUDA when present);
- :mod:`~multibert.video.store`: per-video feature files, sampled and read without loading them all;
- :mod:`~multibert.video.extract`: sharded, resumable feature extraction through ``Trainer.predict``;
- :mod:`~multibert.video.tokenize`: the folder-level pipeline (``multibert tokenize-video``);
- :mod:`~multibert.video.progress`: progress bars, or log lines when stderr is not a terminal;
- :mod:`~multibert.video.montage`: a picture of visual words (``multibert video-montage``).

Shape letters beyond the package's: F frames per clip, S frame side in pixels, D clip-feature size, k branching
and d depth of the k-means tree (K = k^d visual words), n clips.
"""
