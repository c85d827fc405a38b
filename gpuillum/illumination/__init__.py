"""Estimating illumination functions and backgrounds from one or many images."""
