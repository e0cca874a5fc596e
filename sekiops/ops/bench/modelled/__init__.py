"""Sekiban's byte[] path, modelled in Python from Sekiban's source -- not measured on .NET.

The benchmark compares sekiops' streaming persist and restore with what Sekiban's byte[] path
allocates for the same state. That path is .NET code; this package models its buffers one by one
(sizes, order, lifetimes read from Sekiban's source), so the kernel can measure what holding them
costs. It is a model: its peak is a lower bound of the .NET process's (the GC frees large objects
later, ArrayPool keeps returned buffers, the projector's object graph is not modelled), and its
time is Python's transcoding loops, which says nothing about .NET's speed.

It is not part of the product: only the benchmark's child entry point
(``python -m sekiops.ops.bench modelled-persist|modelled-restore``) imports it, in a process of its
own, and nothing here records product metrics. ``tests/test_layering.py`` enforces both.

* :mod:`.dotnet` -- the buffers (.NET arrays and strings, MemoryStream growth, Base64, UTF-16);
* :mod:`.persist` -- ``Serialize`` -> ``GetBytes`` -> gzip -> Base64 -> envelope string, then the
  upload and row write Sekiban makes;
* :mod:`.restore` -- the whole envelope, the Base64 payload string, ``DecompressToString``.
"""
