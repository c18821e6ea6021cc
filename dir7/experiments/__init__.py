"""Research experiments built on DIR-7's layers, kept out of the model package's core.

``dir7.experiments.s5``: can an RWKV-7 stack track a running product of permutations (S5)?
(``python -m dir7.experiments.s5 --help``; notebook 04 plots its stored results.)
"""
