"""Plain ``nn.Module`` networks: deblurring backbones, motion estimator, discriminator and reblur."""
