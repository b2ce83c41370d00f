"""The provider's wire format, in one place: what the SMS REST API accepts and how our
requests to it are spelled.

``limits`` is plain constants (the campaign checks import it without pulling in HTTP);
``payload`` builds, splits and re-references batch bodies; ``client`` talks HTTP.  Nothing is
imported here, so that ``import dispatcher.sinch.limits`` stays free of httpx.
"""
