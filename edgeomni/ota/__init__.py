"""Signed over-the-air bundle updates: signing, publishing (cloud side) and the device updater."""
