"""kinema.tokenizers"""
