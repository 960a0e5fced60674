"""Server strategies: each algorithm as pure functions on arrays plus a thin Flower Strategy."""
