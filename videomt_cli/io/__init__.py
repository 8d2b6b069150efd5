"""Video and files in and out, no torch: probe, read (sources), window, images, prefetch,
writer, masks, ytvis, atomic."""
