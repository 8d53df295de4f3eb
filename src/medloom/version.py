"""The version of medloom, recorded in every manifest and export it writes."""

__version__ = "0.1.0"
