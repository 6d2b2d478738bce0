"""Dataverse (Dynamics 365 CE online) as a service of the emulator host.

    schema.py        metadata shapes (TableDef, Attr, OptionSetDef) and their builders
    tables.py        the org's tables, relationships and global choices
    generate.py      deterministic row generation
    rows.py          one table's rows: blobs, serialisation, indexes, change log
    store.py         the org: all tables, clock, versions, mutations
    metadata.py      JSON and CSDL renderings of the metadata
    service.py       the Web API entry (auth, routing, functions)
    metadata_api.py  EntityDefinitions, GlobalOptionSetDefinitions, RelationshipDefinitions
    data.py          entity sets: paging, filters, counts, change tracking
    paging.py        the XML paging cookie of $skiptoken
    faults.py        Dataverse's 429/503 bodies, forbidden tables, the page-size limit
    deployment.py    what every Dataverse host adds (data API, control endpoints)
"""
