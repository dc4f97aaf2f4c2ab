"""kinema.decode"""
