"""TrustPolicy and TrustStore models, their compilation, and image matching."""
