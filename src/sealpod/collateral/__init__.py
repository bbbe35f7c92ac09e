"""sealpod.collateral: what a verifier needs besides the evidence.

``models`` (pure: DCAP QuoteCollateral, TCB Info, QE Identity, the DcapCollateralProvider
protocol), ``sources`` (files), ``intel`` (Intel PCS v4 client and provider) with ``cache`` (its
content-addressed disk cache), and ``kds`` (AMD KDS, for SEV-SNP).
"""
