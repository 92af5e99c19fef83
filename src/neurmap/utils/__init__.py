"""Small utilities: flow colouring and image grids."""
