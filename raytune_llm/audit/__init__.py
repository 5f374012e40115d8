"""Find likely label errors: k-fold out-of-sample probabilities and confident learning (`raytune-llm audit`)."""
