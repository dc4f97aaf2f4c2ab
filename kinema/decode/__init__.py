"""kinema.decode"""
from kinema.decode.generate import generate, left_pad
from kinema.decode.sampling import cfg_mix, constrain, sample, top_k_filter, top_p_filter
