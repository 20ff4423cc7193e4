"""Training of the mini world's parts on CPU: `python scripts/train_miniworld.py <part> [--resume] [--minutes M]`.

Parts, in the order they depend on each other:
    vae      4× AutoencoderKL on renders (L1 + MSE + KL).
    clip     tiny CLIP, contrastive on renders and their captions, plus CLIP-IQA ("Good photo." /
             "Bad photo." on clean and degraded renders).
    unet     UNet2DConditionModel on VAE latents, conditioned on the frozen CLIP text tower
             (captions dropped 10% of the time for classifier-free guidance), EMA of the weights.
    labeler  segmentation net over background + 20 classes on renders.
    publish  assemble the shipped weights (diffusers pipeline folder, CLIP, labeler) from the runs.

Every part is seeded (batch i is a function of the seed and i only), logs loss and steps/s, writes
a resumable safetensors checkpoint every few minutes and stops after --steps or --minutes.
"""
