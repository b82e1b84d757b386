from django.urls import path

from randomization import apis

urlpatterns = [
    path("participants/<int:pk>/randomize/", apis.RandomizeApi.as_view(), name="api-randomize"),
    path("participants/<int:pk>/allocation/", apis.AllocationApi.as_view(), name="api-allocation"),
    path("participants/<int:pk>/unblind/", apis.UnblindApi.as_view(), name="api-unblind"),
    path("unblindings/", apis.UnblindingListApi.as_view(), name="api-unblindings"),
    path(
        "trials/<int:pk>/randomization/schemes/",
        apis.SchemeListCreateApi.as_view(),
        name="api-randomization-schemes",
    ),
    path(
        "trials/<int:pk>/randomization/activate/",
        apis.SchemeActivateApi.as_view(),
        name="api-randomization-activate",
    ),
    path("trials/<int:pk>/randomization/table/", apis.AllocationTableApi.as_view(), name="api-randomization-table"),
    path("trials/<int:pk>/randomization/balance/", apis.BalanceApi.as_view(), name="api-randomization-balance"),
]
