"""kinema.data"""
