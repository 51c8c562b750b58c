"""Citygate as an ONVIF device (``[onvif-server]``): a SOAP server on a port of its own
(``server``), the SOAP and WS-Security helpers it uses (``soap``) and WS-Discovery replies
(``discovery``)."""
