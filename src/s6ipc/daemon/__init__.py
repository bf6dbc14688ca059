"""What a long-lived daemon has besides its loop: readiness, the live view, the in-place upgrade.
"""
