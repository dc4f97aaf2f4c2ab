"""kinema.lm"""
