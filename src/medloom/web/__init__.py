"""The loom in a browser (`medloom serve`) and on paper (`medloom report`).

The app reads only what manifests name (the catalog's parts and the curation files medloom wrote), so it
keeps serving while an ingest or export runs beside it, and picks their results up when their manifests
change. Its few writes (cluster labels, duplicate choices, reviewed texts) take the loom's lock like any
other writer.
"""
