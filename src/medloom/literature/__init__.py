"""Biomedical literature: JATS articles, licences, MeSH terms and the PMC OA download service."""
