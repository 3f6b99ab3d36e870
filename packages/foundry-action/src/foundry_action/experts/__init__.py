"""Action experts: flow matching, DDPM/DDIM diffusion and L1 regression over one shared transformer."""
