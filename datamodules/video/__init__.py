"""VideoBERT data: transcripts (:mod:`~datamodules.video.transcripts`), text + visual-word examples
(:mod:`~datamodules.video.datamodule`) and the SYNTHETIC demo videos (:mod:`~datamodules.video.synthetic`).
The model side (decoding, clip features, k-means visual words, the adapter) is :mod:`multibert.video`."""
