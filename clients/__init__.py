"""Everything one state does with its own data: load, encode, split, train, evaluate."""
