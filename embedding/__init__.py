"""Pixels to latents: face alignment, the StyleGAN2 generator, projection and latent editing.

Imports only the standard library, torch, numpy, Pillow and dlib, so it runs alone on a GPU box.
"""
