"""sealpod.collateral: what a verifier needs besides the evidence.

``models`` (pure: DCAP QuoteCollateral, TCB Info, QE Identity, the DcapCollateralProvider
protocol), ``sources`` (files), ``intel`` (Intel PCS v4 client and provider), ``kds`` (AMD
KDS, for SEV-SNP), ``cache`` (the
content-addressed disk cache the HTTP sources share).
"""
