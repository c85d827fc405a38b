"""The plate job: streaming accumulation, smoothing once per plate and channel, apply and write."""
